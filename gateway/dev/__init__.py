"""Not for production: the demo, the demo backend that stands in for the customer's systems, the
test caller behind ``puente call``, and the harness that runs a real gateway in a subprocess for
tests and benchmarks."""
