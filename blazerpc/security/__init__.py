"""Who may call, over what: TLS contexts, API keys, request ids.

Below the runtime and the transports, which all use it; it knows nothing of models.
"""
