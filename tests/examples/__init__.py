"""Tests of the examples, written as a user of eventkit would write them."""
