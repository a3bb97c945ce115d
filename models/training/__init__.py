"""Training runs: configuration, schedules, both frameworks' loops, distillation and export."""
