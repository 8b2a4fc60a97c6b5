//! cci: run AI coding agents in unprivileged Incus system containers.
//!
//! Layers, top to bottom: [`cli`] (argument parsing and output), the domain
//! modules ([`sandbox`], [`network`], [`proxy`], [`image`], [`health`], [`container`], [`terminal`]), and [`incus`], a typed client
//! for the Incus REST API that knows nothing about cci.
//! The CLI builds one [`host::Host`] (client, firewall, configuration) and
//! hands it down; the domain modules build no side effect of their own.

pub mod attention;
pub mod cli;
pub mod config;
pub mod container;
pub mod forge;
pub mod git;
pub mod health;
pub mod host;
pub mod image;
pub mod incus;
pub mod network;
pub mod proxy;
pub mod remote;
pub mod sandbox;
pub mod session;
pub mod state;
pub mod terminal;
