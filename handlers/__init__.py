"""Thin Connexion adapters over ``broker``.

``openapi.yaml`` routes each operation to a function here. A handler reads
Connexion's validated arguments, makes one call into ``broker`` and shapes the
response; errors are raised by ``broker`` and rendered by ``handlers.problems``.
Handlers never import ``jwt`` or ``msal``.
"""
