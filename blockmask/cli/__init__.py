"""The ``blockmask`` command line, one module per command group (:mod:`blockmask.cli.main` builds the
parser; :mod:`blockmask.cli.common` holds the helpers they share)."""
