"""Edge agents: what runs on the box in a kitchen, cold store or elevator machine room."""
