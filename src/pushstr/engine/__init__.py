"""The event → notification path: admission, match, policy, batch, render."""
