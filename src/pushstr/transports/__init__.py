"""Push services behind one `Transport` interface, and the dispatcher that feeds them."""
