//! `rollouts.mizzen.io`: Mizzen's progressive delivery resources.
