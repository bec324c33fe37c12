"""Who is calling and what they may do: API tokens, permissions per RPC, scope."""
