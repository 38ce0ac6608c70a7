"""Trading automations: take profit, stop loss and automatic entry, configured per account."""
