"""The hand-written category tree of the ``"sample"`` shape (142 categories, depth <= 6).

The tree imitates Amazon's browse tree as XMarket records it (``categories`` = root-to-leaf
path). A leaf maps to the product nouns used in titles: some nouns repeat words of the leaf or
its parent ("Radio Antenna" under "Radio Antennas"), some are only synonyms ("FM Aerial"), so
a text model gets real but imperfect signal. Names such as "Accessories", "Balls", "Parts",
"Cables" or "Replacement Parts" occur under several parents on purpose: the retrieval query is
a category *name*, and real trees are full of such ambiguous names.

The roots' other words (brands, materials, title parts) are in :mod:`.vocabulary`; the
``"paper"`` shape grows its tree from this one (:mod:`.paper_tree`).
"""

from __future__ import annotations

# Internal nodes are dicts (child name -> subtree); leaves are lists of product nouns.
CategorySpec = dict[str, "CategorySpec | list[str]"]

TREE: CategorySpec = {
    "Electronics": {
        "Accessories & Supplies": {
            "Audio & Video Accessories": {
                "Antennas": {
                    "Radio Antennas": [
                        "Radio Antenna",
                        "FM Aerial",
                        "AM Loop Antenna",
                        "Dipole FM Antenna",
                    ],
                    "TV Antennas": [
                        "TV Antenna",
                        "HDTV Aerial",
                        "Indoor Digital Antenna",
                        "Freeview Aerial",
                    ],
                },
                "Cables": {
                    "HDMI Cables": ["HDMI Cable", "High Speed HDMI Lead", "4K HDMI Cord"],
                },
                "Remote Controls": [
                    "Remote Control",
                    "Universal Remote",
                    "TV Remote",
                    "Replacement Remote",
                ],
            },
            "Batteries & Chargers": {
                "Batteries": [
                    "AA Batteries",
                    "Rechargeable Batteries",
                    "Lithium Coin Cells",
                    "AAA Battery Pack",
                ],
                "Chargers": [
                    "Battery Charger",
                    "USB Wall Charger",
                    "Fast Charger",
                    "Charging Dock",
                ],
            },
        },
        "Camera & Photo": {
            "Accessories": {
                "Bags & Cases": ["Camera Bag", "Camera Case", "Sling Bag for Cameras", "Hard Case"],
                "Tripods & Monopods": [
                    "Tripod",
                    "Travel Tripod",
                    "Mini Tabletop Tripod",
                    "Monopod",
                ],
            },
            "Digital Cameras": [
                "Compact Digital Camera",
                "Point and Shoot Camera",
                "DSLR Camera",
                "Mirrorless Camera Body",
            ],
            "Lenses": ["Camera Lens", "Prime Lens", "Telephoto Zoom Lens", "Wide Angle Lens"],
        },
        "Computers & Accessories": {
            "Computer Accessories & Peripherals": {
                "Keyboards, Mice & Accessories": {
                    "Keyboards": ["Keyboard", "Wireless Keyboard", "Mechanical Gaming Keyboard"],
                    "Mice": ["Wireless Mouse", "Optical Mouse", "Ergonomic Mouse", "Gaming Mouse"],
                    "Mouse Pads": ["Mouse Pad", "Desk Mat", "Gel Wrist Rest Mouse Mat"],
                },
                "Cables & Accessories": {
                    "Cables": {
                        "USB Cables": ["USB-C Cable", "USB Charging Cable", "Micro USB Lead"],
                        "Ethernet Cables": [
                            "Ethernet Cable",
                            "Cat6 Network Cable",
                            "LAN Patch Cord",
                        ],
                    },
                },
            },
            "Laptop Accessories": {
                "Bags, Cases & Sleeves": ["Laptop Sleeve", "Laptop Backpack", "Notebook Case"],
            },
            "Computer Components": {
                "Replacement Parts": {
                    "Laptop Replacement Screens": [
                        "Replacement LCD Screen",
                        "Laptop Display Panel",
                        "LED Screen Assembly",
                    ],
                },
            },
        },
        "Headphones": {
            "Earbud Headphones": ["Wireless Earbuds", "In-Ear Headphones", "Earphones"],
            "Over-Ear Headphones": [
                "Over-Ear Headphones",
                "Noise Cancelling Headphones",
                "Studio Headphones",
            ],
            "Accessories": [
                "Replacement Ear Pads",
                "Headphone Stand",
                "Headphone Case",
                "Audio Splitter",
            ],
        },
        "Wearable Technology": ["Smart Watch", "Fitness Tracker", "Activity Band"],
    },
    "Home & Kitchen": {
        "Kitchen & Dining": {
            "Cookware": {
                "Pots & Pans": {
                    "Frying Pans": ["Frying Pan", "Non-Stick Skillet", "Omelette Pan"],
                    "Saucepans": ["Saucepan", "Milk Pan", "Saucepan Set with Lids"],
                },
            },
            "Kitchen Utensils & Gadgets": {
                "Baking Tools & Accessories": {
                    "Measuring Cups": ["Measuring Cups", "Measuring Spoon Set", "Measuring Jug"],
                },
                "Cooking Utensils": ["Spatula", "Utensil Set", "Slotted Spoon", "Kitchen Tongs"],
            },
            "Small Appliances": {
                "Coffee Makers": ["Coffee Maker", "Espresso Machine", "Filter Coffee Machine"],
                "Blenders": ["Blender", "Smoothie Maker", "Hand Blender"],
                "Parts & Accessories": {
                    "Replacement Parts": [
                        "Replacement Blade Assembly",
                        "Spare Jug",
                        "Replacement Gasket",
                    ],
                },
            },
            "Storage & Organisation": [
                "Food Storage Containers",
                "Airtight Jar Set",
                "Lunch Box",
            ],
        },
        "Home Décor": {
            "Candles": ["Scented Candle", "Pillar Candle", "Tea Light Candles"],
            "Clocks": ["Wall Clock", "Silent Wall Clock", "Alarm Clock", "Bedside Clock"],
        },
        "Bedding": {
            "Sheets & Pillowcases": ["Fitted Sheet", "Pillowcase Pair", "Bed Sheet Set"],
            "Pillows": ["Pillow", "Memory Foam Pillow", "Bed Pillows", "Duvet"],
        },
        "Storage & Organisation": {
            "Baskets & Bins": ["Storage Basket", "Storage Bin", "Woven Basket"],
            "Clothing & Closet Storage": [
                "Hanging Wardrobe Organizer",
                "Shoe Rack",
                "Clothes Hangers",
            ],
            "Accessories": ["Drawer Dividers", "Storage Labels", "Vacuum Storage Bags"],
        },
        "Vacuums & Floor Care": {
            "Vacuums": {
                "Robotic Vacuums": [
                    "Robot Vacuum Cleaner",
                    "Robotic Vacuum",
                    "Self-Charging Robot Hoover",
                ],
                "Upright Vacuums": [
                    "Upright Vacuum Cleaner",
                    "Bagless Upright Hoover",
                    "Corded Vacuum",
                ],
            },
            "Parts & Accessories": {
                "Filters": ["HEPA Filter", "Replacement Vacuum Filter", "Filter Kit"],
                "Bags": ["Vacuum Bags", "Dust Bags", "Replacement Hoover Bags"],
            },
        },
    },
    "Sports & Outdoors": {
        "Outdoor Recreation": {
            "Camping & Hiking": {
                "Tents & Shelters": {
                    "Tents": ["Tent", "Dome Tent", "Backpacking Tent", "Pop Up Tent", "Tarp"],
                },
                "Sleeping Bags & Camp Bedding": {
                    "Sleeping Bags": ["Sleeping Bag", "Mummy Sleeping Bag", "Down Sleeping Bag"],
                },
                "Lights & Lanterns": {
                    "Headlamps": ["Headlamp", "LED Head Torch", "Rechargeable Headlight"],
                },
                "Backpacks & Bags": ["Hiking Backpack", "Daypack", "Dry Bag"],
            },
            "Cycling": {
                "Accessories": {
                    "Lights": ["Bike Light Set", "Rear Bicycle Light", "Front Bike Light"],
                    "Bike Locks": ["Bike Lock", "D-Lock", "Cable Lock for Bicycles"],
                },
                "Helmets": ["Bike Helmet", "Cycling Helmet", "MTB Helmet"],
                "Parts": {
                    "Brakes": ["Brake Pads", "Disc Brake Rotor", "Brake Cable Set"],
                    "Tyres & Tubes": ["Bike Tyre", "Inner Tube", "Puncture Resistant Tire"],
                },
            },
        },
        "Sports & Fitness": {
            "Exercise & Fitness": {
                "Yoga": {
                    "Yoga Mats": ["Yoga Mat", "Non-Slip Exercise Mat", "Thick Pilates Mat"],
                    "Yoga Blocks": ["Yoga Block", "Foam Brick", "Cork Yoga Block"],
                },
                "Strength Training Equipment": {
                    "Dumbbells": ["Dumbbell Set", "Adjustable Dumbbells", "Hex Dumbbell"],
                    "Kettlebells": ["Kettlebell", "Cast Iron Kettlebell", "Competition Kettlebell"],
                },
                "Accessories": ["Resistance Bands", "Gym Gloves", "Skipping Rope", "Foam Roller"],
            },
            "Team Sports": {
                "Football": {
                    "Balls": ["Football", "Soccer Ball", "Training Ball Size 5"],
                },
                "Basketball": {
                    "Balls": ["Basketball", "Indoor Outdoor Basketball", "Street Basketball"],
                    "Hoops": ["Basketball Hoop", "Wall Mounted Hoop", "Door Hoop Set"],
                },
            },
            "Water Sports": {
                "Swimming": {
                    "Goggles": ["Swimming Goggles", "Anti-Fog Swim Goggles", "Mirrored Goggles"],
                },
            },
        },
    },
    "Toys & Games": {
        "Building Toys": {
            "Building Sets": ["Building Blocks Set", "Construction Bricks", "Magnetic Tiles"],
            "Marble Runs": ["Marble Run", "Marble Track Set", "Marble Maze"],
        },
        "Games": {
            "Board Games": ["Board Game", "Strategy Game", "Family Board Game"],
            "Card Games": ["Card Game", "Playing Cards", "Party Card Game"],
            "Puzzles": {
                "Jigsaw Puzzles": ["Jigsaw Puzzle 1000 Pieces", "Jigsaw Puzzle", "Floor Puzzle"],
                "Brain Teasers": ["Brain Teaser", "Puzzle Cube", "Metal Puzzle Set"],
            },
        },
        "Dolls & Accessories": {
            "Dolls": ["Fashion Doll", "Baby Doll", "Rag Doll"],
            "Dollhouses": ["Dollhouse", "Wooden Dolls House", "Doll House Furniture Set"],
            "Accessories": ["Doll Clothes", "Doll Pram", "Doll Accessory Set"],
        },
        "Sports & Outdoor Play": {
            "Kites & Flying Toys": ["Kite", "Stunt Kite", "Foam Glider"],
            "Pools & Water Toys": ["Water Pistol", "Paddling Pool", "Sprinkler Toy"],
            "Balls": ["Play Ball", "Bouncy Ball", "Sensory Ball Set"],
        },
        "Toy Vehicles": {
            "Cars": ["Toy Car", "Die-Cast Car", "Pull Back Cars"],
            "Trains": ["Wooden Train Set", "Toy Train", "Train Track Set"],
            "Remote-Control Vehicles": {
                "RC Cars": ["Remote Control Car", "RC Truck", "Off-Road RC Car"],
                "Parts": ["RC Replacement Battery", "Spare Propellers", "RC Car Tyres"],
            },
        },
        "Stuffed Animals & Plush Toys": ["Teddy Bear", "Plush Toy", "Cuddly Unicorn"],
    },
    "Office Products": {
        "Office & School Supplies": {
            "Writing & Correction Supplies": {
                "Pens": ["Ballpoint Pens", "Gel Pens", "Fountain Pen"],
                "Pencils": ["Pencils", "Mechanical Pencil", "Colouring Pencils"],
            },
            "Paper": {
                "Notebooks": ["Notebook", "Spiral Notebook", "A5 Notepad"],
            },
        },
        "Office Electronics": {
            "Calculators": ["Calculator", "Scientific Calculator", "Desktop Calculator"],
            "Accessories": ["Printer Cable", "Label Tape", "Laminating Pouches"],
        },
    },
}
