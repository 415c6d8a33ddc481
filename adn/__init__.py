"""adn: see README.md."""
