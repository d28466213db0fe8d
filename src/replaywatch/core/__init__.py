"""The pure core: the types the stages hand each other, batches, and the projection
of a step. Plain functions over plain data: no IO, no asyncio, no client library."""
