"""Provider adapters: one module per upstream wire format, chosen by the provider's `kind`."""
