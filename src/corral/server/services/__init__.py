"""Services: the server's behaviour. Each public function is one use case,
runs its writes as one transaction, and raises ``corral.errors`` only."""
