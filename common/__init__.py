"""dynnets.common: shared, paper-agnostic pieces (data, backbones, dynamic blocks, metrics, train, hub, reproduction)."""
