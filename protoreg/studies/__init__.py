"""Built-in studies: sets of claims checked on a sweep's results (``sweep.study``)."""
