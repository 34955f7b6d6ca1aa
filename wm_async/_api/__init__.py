"""The public API: the WorkManager facade, requests and chains."""
