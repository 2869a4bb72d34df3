"""Sums the amounts of the rows on stdin, per region and in total."""
import csv
import sys

totals = {}
for row in csv.DictReader(sys.stdin):
    totals[row["region"]] = totals.get(row["region"], 0) + int(row["amount"])
for region, amount in sorted(totals.items()):
    print(f"{region:6} {amount:6}")
print(f"{'total':6} {sum(totals.values()):6}")
