"""For callers that cannot import the app: schema discovery through reflection, typed stubs."""
