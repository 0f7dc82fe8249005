"""HTTP plumbing shared by every dialect: request ids, state access, form and JSON parsing."""
