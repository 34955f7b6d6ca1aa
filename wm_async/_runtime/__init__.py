"""The runtime: the services that run works inside the app's event loop. The scheduler
(composing the dispatcher, runner pool, run table, deadlines, recorder, lease keeper and
the settle state virtual clocks wait on), the executor, the event hub and publishing,
the constraint board, the loop watchdog, and the services of a running manager that
start and stop them all."""
