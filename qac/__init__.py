"""The ``qac`` command: one module per subcommand, above the ``indexer``, ``server`` and
``replay`` libraries (which never import it). Each module has ``add_parser(sub)``, and its
``run(args)`` returns the exit code; library errors (:class:`indexer.errors.QacError`) become
one line on stderr and exit code 2 in :func:`qac.main.main`."""
