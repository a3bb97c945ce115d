"""The benchmark's audit-log part runs end to end on a small log (its figures are not asserted)."""

from scripts.benchmark import bench_audit


def test_the_audit_benchmark_measures_every_query():
    rows = bench_audit(entries=300)
    assert rows[0] == "| audit log query over 300 entries | ms (median of 5) |"
    measured = rows[2:]
    assert len(measured) == 8
    for row in measured:
        name, ms = (cell.strip() for cell in row.strip("|").split("|"))
        assert name and float(ms) >= 0
