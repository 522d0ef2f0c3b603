"""Socket.IO: handlers, the fan-out of stored batches to clients, the tick and status pushes."""
