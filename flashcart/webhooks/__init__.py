"""Webhooks: admins register endpoints; the deliverer (`flask deliver`) sends them the
events of the feed (flashcart.events), signed, at least once, in order per resource."""
