"""doctor: the checks that prevent the next quorum loss, and prove a recovery would work.

``model`` (checks as data), ``metrics`` (the /metrics text and its percentiles) and ``checks``
(readings in, checks out) are pure; ``gather`` reads the hosts (SSH, gRPC through SSH tunnels)
concurrently, each reading under its own timeout; ``output`` renders a table, JSON and the
node_exporter textfile format.
"""
