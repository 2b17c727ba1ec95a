"""`dcomp batch`: compress, decompress or benchmark a whole tree of images on a Dask cluster.

    plan.py        the inputs (a folder tree or a manifest), their mirrored outputs, the tasks
    worker.py      one task on a worker: each image done and written atomically, or skipped
    cluster.py     the Dask side: connect or start a cluster, set its workers up once, run tasks
    run.py         the driver: submit, follow, log every image (JSON Lines), sum up
    progress.py    the progress line, the run's log and its summary
    bench.py       `dcomp bench`'s points, measured on the cluster
    throughput.py  `make bench-batch`: 1 worker against 2, and a worker killed mid-run

Dask is an optional extra (`pip install 'dcomp[cluster]'`): only cluster.py imports it, and
only the batch commands import cluster.py, so plain `dcomp` never needs it.
"""
