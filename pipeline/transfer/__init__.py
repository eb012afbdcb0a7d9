"""Transfer-learning helpers: scores that rank candidate source models without fine-tuning."""
