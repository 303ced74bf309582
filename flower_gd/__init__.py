"""flower-gd: knowledge-sharing federated and decentralized learning on Flower."""
