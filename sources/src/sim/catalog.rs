//! A deterministic, realistic shop catalog for `stockflow seed`.
//!
//! Product `i` depends only on `i` (its own RNG stream), so seeding 100
//! products and later 200 gives the same first 100: a re-seed with a larger
//! `--products` only adds.

use dataflow::{Catalog, Product, Supplier};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

struct Category {
    name: &'static str,
    brands: &'static [&'static str],
    items: &'static [&'static str],
    variants: &'static [&'static str],
    /// Price range in cents.
    price_cents: (i64, i64),
}

const CATEGORIES: &[Category] = &[
    Category {
        name: "Grocery",
        brands: &["Harvest Lane", "Golden Mill", "Casa Verde", "Nordic Pantry"],
        items: &[
            "Basmati Rice",
            "Penne Pasta",
            "Rolled Oats",
            "Extra Virgin Olive Oil",
            "Peanut Butter",
            "Chickpeas",
            "Honey",
            "Tomato Passata",
        ],
        variants: &["500 g", "1 kg", "2 kg", "750 ml", "Organic 500 g"],
        price_cents: (129, 1499),
    },
    Category {
        name: "Beverages",
        brands: &["Blue Ridge", "Alpine Spring", "Koffie Co.", "Leaf & Kettle"],
        items: &[
            "Ground Coffee",
            "Espresso Beans",
            "Green Tea",
            "Sparkling Water",
            "Orange Juice",
            "Cold Brew",
        ],
        variants: &["250 g", "1 kg", "20 bags", "6 x 1 l", "1 l"],
        price_cents: (99, 2499),
    },
    Category {
        name: "Household",
        brands: &["BrightHome", "Clearwell", "EcoNest"],
        items: &[
            "Dish Soap",
            "Laundry Detergent",
            "Paper Towels",
            "Trash Bags",
            "All-Purpose Cleaner",
            "Sponges",
        ],
        variants: &["500 ml", "2 l", "8 rolls", "30 pack", "3 pack"],
        price_cents: (199, 2999),
    },
    Category {
        name: "Personal Care",
        brands: &["Pure Bloom", "Dermaline", "Oakmoss"],
        items: &["Shampoo", "Body Wash", "Toothpaste", "Deodorant", "Hand Cream", "Razor Blades"],
        variants: &["250 ml", "400 ml", "75 ml", "4 pack", "Sensitive"],
        price_cents: (249, 3499),
    },
    Category {
        name: "Electronics",
        brands: &["Voltix", "Lumen", "SoundArc", "Keyline"],
        items: &[
            "USB-C Cable",
            "Wireless Earbuds",
            "Power Bank",
            "Bluetooth Speaker",
            "Wireless Mouse",
            "HDMI Cable",
            "Phone Charger",
        ],
        variants: &["1 m", "2 m", "10000 mAh", "Black", "White", "65 W"],
        price_cents: (799, 14999),
    },
    Category {
        name: "Toys",
        brands: &["Playwise", "Brickfield", "Tiny Tales"],
        items: &["Building Blocks Set", "Puzzle", "Plush Bear", "Card Game", "Remote Control Car"],
        variants: &["500 pieces", "1000 pieces", "Small", "Large", "Family Edition"],
        price_cents: (599, 7999),
    },
    Category {
        name: "Garden",
        brands: &["GreenThumb", "Terra Firma"],
        items: &["Potting Soil", "Tomato Seeds", "Garden Hose", "Pruning Shears", "Plant Food"],
        variants: &["20 l", "40 l", "15 m", "Pro", "1 kg"],
        price_cents: (299, 4999),
    },
    Category {
        name: "Apparel",
        brands: &["Northline", "Urban Thread", "Fieldwear"],
        items: &["Cotton T-Shirt", "Wool Socks", "Rain Jacket", "Beanie", "Running Shorts"],
        variants: &["S", "M", "L", "XL", "2 pack"],
        price_cents: (999, 12999),
    },
    Category {
        name: "Stationery",
        brands: &["Inkwell", "Paperleaf"],
        items: &["Ballpoint Pens", "Spiral Notebook", "Sticky Notes", "Highlighters", "A4 Copy Paper"],
        variants: &["10 pack", "A5", "A4", "4 colours", "500 sheets"],
        price_cents: (149, 2999),
    },
    Category {
        name: "Pet Supplies",
        brands: &["Happy Paws", "Whisker & Tail"],
        items: &["Dry Dog Food", "Cat Litter", "Chew Toy", "Cat Treats", "Dog Shampoo"],
        variants: &["2 kg", "10 kg", "Small", "Large", "Salmon"],
        price_cents: (299, 5999),
    },
];

const SUPPLIER_STEMS: &[&str] = &[
    "Northwind",
    "Bluewater",
    "Summit",
    "Redwood",
    "Harbor",
    "Silverline",
    "Evergreen",
    "Keystone",
    "Pioneer",
    "Crescent",
    "Granite",
    "Meridian",
    "Orchard",
    "Prairie",
    "Riverside",
    "Sterling",
];
const SUPPLIER_KINDS: &[&str] = &["Wholesale", "Distribution", "Trading Co.", "Supply", "Logistics", "Foods"];

/// The stable id of product number `i` (0-based).
pub fn product_id(i: usize) -> String {
    format!("SKU-{:06}", i + 1)
}

/// The stable id of supplier number `i` (0-based).
pub fn supplier_id(i: usize) -> String {
    format!("SUP-{:04}", i + 1)
}

fn rng_for(kind: u64, i: usize) -> ChaCha8Rng {
    // A fixed, documented derivation: the catalog never depends on a user seed.
    ChaCha8Rng::seed_from_u64(kind.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64)
}

/// Supplier number `i`.
pub fn supplier(i: usize) -> Supplier {
    let stem = SUPPLIER_STEMS[i % SUPPLIER_STEMS.len()];
    let kind = SUPPLIER_KINDS[(i / SUPPLIER_STEMS.len()) % SUPPLIER_KINDS.len()];
    let round = i / (SUPPLIER_STEMS.len() * SUPPLIER_KINDS.len());
    let name = if round == 0 { format!("{stem} {kind}") } else { format!("{stem} {kind} {}", round + 1) };
    let domain: String = name.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut rng = rng_for(2, i);
    let phone = rng.random_range(100..1000);
    Supplier {
        supplier_id: supplier_id(i),
        name,
        contact: format!("orders@{domain}.example, +1-555-0{phone}"),
    }
}

/// Product number `i`, restocked by one of `suppliers` suppliers.
///
/// Popularity falls with the index (the simulation's best-sellers are the
/// first products), so reorder levels and opening stock do too.
pub fn product(i: usize, suppliers: usize) -> Product {
    let mut rng = rng_for(1, i);
    let cat = &CATEGORIES[rng.random_range(0..CATEGORIES.len())];
    let brand = cat.brands[rng.random_range(0..cat.brands.len())];
    let item = cat.items[rng.random_range(0..cat.items.len())];
    let variant = cat.variants[rng.random_range(0..cat.variants.len())];
    let cents = rng.random_range(cat.price_cents.0..=cat.price_cents.1);
    // Shop prices end in .49, .95 or .99 most of the time.
    let cents = match rng.random_range(0..4) {
        0 => cents / 100 * 100 + 49,
        1 => cents / 100 * 100 + 95,
        2 => cents / 100 * 100 + 99,
        _ => cents,
    };
    let popularity = 1.0 / ((i + 1) as f64).powf(0.6);
    let reorder_level = (5.0 + 120.0 * popularity * rng.random_range(0.8..1.2)).round() as i32;
    let opening = i64::from(reorder_level) * rng.random_range(3..8) + rng.random_range(0..20);
    Product {
        product_id: product_id(i),
        name: format!("{brand} {item} {variant}"),
        category: cat.name.to_string(),
        price: Decimal::new(cents, 2),
        reorder_level,
        supplier_id: (suppliers > 0).then(|| supplier_id(rng.random_range(0..suppliers))),
        quantity_on_hand: opening,
    }
}

/// The first `products` products and `suppliers` suppliers.
pub fn generate(products: usize, suppliers: usize) -> Catalog {
    Catalog {
        products: (0..products).map(|i| product(i, suppliers)).collect(),
        suppliers: (0..suppliers).map(supplier).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_deterministic_and_prefix_stable() {
        let a = generate(50, 5);
        assert_eq!(a, generate(50, 5));
        let b = generate(80, 5);
        assert_eq!(a.products[..], b.products[..50]);
        assert!(a.products.iter().all(|p| p.price > Decimal::ZERO && p.reorder_level > 0));
        assert!(a.products.iter().all(|p| p.quantity_on_hand > i64::from(p.reorder_level)));
    }
}
