use cachesweeper::TemplateDigest;

#[derive(TemplateDigest)]
struct Page {
    title: String,
}

// The error above is the only one: the derive still implements the trait.
const _: &str = <Page as TemplateDigest>::TEMPLATE_DIGEST;

fn main() {}
