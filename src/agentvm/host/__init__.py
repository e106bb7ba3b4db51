"""One host: run state (liveness, queue, VM slots), the reaper, alerts, doctor, history, batch, and isolation."""
