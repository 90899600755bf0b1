"""Payment providers (M-Pesa STK push, Stripe Checkout) and the settlement logic they share."""
