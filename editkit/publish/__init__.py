"""What a run tells the world: the ablation card (front matter, sections, plots) and the push to the Hub."""
