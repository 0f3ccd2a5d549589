"""The benchmark suite's app, copied into a rendered project by benchmarks/suite.py.

It adds what the workloads need and nothing the project's own code uses: the
tasks and the view they run, the profiles' settings modules (profiles/) and the
`bench` management command that drives the load from inside the project.
"""
