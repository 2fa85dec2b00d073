"""The demo page and the embeddable client script, shipped as package data.

``qac serve`` finds them with ``importlib.resources.files("static")``.
"""
