"""The ledger: pricing and the single batched writer."""
