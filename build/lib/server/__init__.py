"""Online side: serve a completion model over WebSocket and HTTP (``qac serve``).

``server.main.run(config)`` serves; ``server.app.create_app`` builds the Starlette app.
Nothing here imports the trainer (``indexer.train``) or the clients (``replay``).
"""
