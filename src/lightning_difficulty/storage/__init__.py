"""What the package writes and reads on disk: atomic files, the table, per-epoch records, manifests."""
