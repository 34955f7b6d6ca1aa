"""The runtime: the services that run works inside the app's event loop (dispatcher,
runners, deadlines, result recording, leases, event hub, executor, constraint board,
loop watchdog)."""
