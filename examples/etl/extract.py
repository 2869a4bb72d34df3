"""Writes the day's rows as CSV (a stand-in for reading a real source)."""
import argparse
import random

parser = argparse.ArgumentParser()
parser.add_argument("--day", required=True)
day = parser.parse_args().day
rng = random.Random(day)
print("day,region,amount")
for region in ("north", "south", "east", "west"):
    print(f"{day},{region},{rng.randint(100, 999)}")
