"""Language model providers. Importing this package must stay cheap: the anthropic and openai
SDKs are imported only when a provider client is built (see `registry.ProviderRegistry.get`)."""
