"""Load on the content API: Locust workloads, the sweep over cluster mode and
its peers, and the plots of the report."""
