"""The ledger: pricing, the single batched writer, and the hourly usage rollups it keeps."""
