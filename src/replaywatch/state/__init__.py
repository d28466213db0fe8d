"""What the consumer keeps of the steps it owns: committed projections (cache) and
the projections of batches not committed yet (the overlay)."""
