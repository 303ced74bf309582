"""Serverless knowledge-sharing strategies (the ServerApp only relays between nodes)."""
