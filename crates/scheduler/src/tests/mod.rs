//! The scheduler's tests: readable examples, properties of one `plan`, and
//! properties of whole simulated rooms.

mod examples;
mod plan_props;
mod sim;
mod sim_props;
