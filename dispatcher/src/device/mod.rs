//! The device: a rendered device YAML, or a device dictionary rendered from templates.
//!
//! [`load_device`] reads either kind into [`model::Device`]; [`boot_style`] says whether the
//! board is booted over its console (LAVA's way) or by labboot's network boot script.
//! Device dictionaries are rendered with minijinja the way LAVA renders them with Jinja2;
//! the differences between the two engines are handled in `pycompat`.

mod load;
pub mod model;
mod parse;
mod pycompat;
mod template;

pub use load::{boot_style, load_device, parse_device};
pub use model::*;
pub use template::{
    extends_name, render_dictionary, shipped_templates_dir, Rendered, TEMPLATES_ENV,
};

#[cfg(test)]
mod tests;
