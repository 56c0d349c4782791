"""ctt-broker's domain: framework-free, plain values in and out.

Nothing in this package imports a web framework (connexion, starlette); the
``handlers`` package adapts it to HTTP and a test keeps it that way.
"""
