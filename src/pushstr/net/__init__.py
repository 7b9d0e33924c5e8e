"""Network plumbing shared by relays and push transports: the HTTP/2 client, HPACK, HTTP clients and the URL guard."""
