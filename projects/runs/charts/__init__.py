"""The charts of a run's page: loss and learning rate, and a DPO run's rewards."""
