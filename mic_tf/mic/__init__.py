"""The MIC plugin (paper sections 2.3-2.7): perturbation views, nearest-neighbour mining and the
cross-channel contrastive losses, wrapped around any registered encoder."""
