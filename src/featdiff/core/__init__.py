"""What every stage shares: configs and their field checks, atomic files, threads, progress bars, run state."""
